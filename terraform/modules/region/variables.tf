variable "fleet_name" {
  description = "Name of the failover fleet; prefixes resource names and tags so several fleets can share an account."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.fleet_name))
    error_message = "fleet_name must be 1-31 characters of lower-case letters, digits and '-', starting with a letter."
  }
}

variable "name" {
  description = "Region name as the failover topology knows it (the <region>.toml file name), e.g. \"us-east-1\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,62}$", var.name))
    error_message = "name must be lower-case letters, digits and '-', starting with a letter or digit (the topology's region name rule)."
  }
}

variable "priority" {
  description = "Failover priority of this region in the topology: higher wins ties between equally good targets."
  type        = number
  default     = 0

  validation {
    condition     = var.priority == floor(var.priority)
    error_message = "priority must be a whole number."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of this region's VPC (/16 to /24); must not overlap the other regions' CIDRs, which reach it over VPC peering."
  type        = string

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && can(regex("^[0-9.]+/(1[6-9]|2[0-4])$", var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR with a prefix length from /16 to /24, e.g. \"10.10.0.0/16\"."
  }
}

variable "peer_cidrs" {
  description = "CIDRs of the other regions' VPCs: the only networks allowed to reach PostgreSQL and the controller API (besides client_cidrs for PostgreSQL and operator_cidrs for the API)."
  type        = list(string)

  validation {
    condition     = alltrue([for cidr in var.peer_cidrs : can(cidrhost(cidr, 0)) && can(regex("^[0-9.]+/[0-9]+$", cidr))])
    error_message = "peer_cidrs must hold IPv4 CIDRs, e.g. [\"10.20.0.0/16\"]."
  }
}

variable "client_cidrs" {
  description = "Extra CIDRs of applications allowed to reach PostgreSQL (never the controller API). Empty: only the other regions."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.client_cidrs : can(cidrhost(cidr, 0)) && can(regex("^[0-9.]+/[0-9]+$", cidr))])
    error_message = "client_cidrs must hold IPv4 CIDRs, e.g. [\"10.10.0.0/16\"]."
  }
}

variable "availability_zone_count" {
  description = "Number of subnets, one per availability zone."
  type        = number
  default     = 2

  validation {
    condition     = contains([1, 2, 3], var.availability_zone_count)
    error_message = "availability_zone_count must be 1, 2 or 3."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the PostgreSQL host (which also runs the region's controller)."
  type        = string
  default     = "t3.small"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*[0-9][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like an EC2 instance type, e.g. \"t3.small\"."
  }
}

variable "ami_ssm_parameter" {
  description = "SSM public parameter holding the AMI id; the cloud-init script expects Amazon Linux 2023 (dnf, postgresqlNN-server)."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"

  validation {
    condition     = startswith(var.ami_ssm_parameter, "/")
    error_message = "ami_ssm_parameter must be an SSM parameter name starting with '/'."
  }
}

variable "postgres_major_version" {
  description = "PostgreSQL major version installed from the Amazon Linux 2023 packages."
  type        = number
  default     = 16

  validation {
    condition     = contains([15, 16, 17], var.postgres_major_version)
    error_message = "postgres_major_version must be 15, 16 or 17 (the versions Amazon Linux 2023 packages)."
  }
}

variable "postgres_sslmode" {
  description = <<-EOT
    How the controllers and the subscriptions check the regions' PostgreSQL certificates
    against the CA in ssm_parameters.tls_ca: "verify-ca" (signed by it), "verify-full"
    (also names the host's private address, which each certificate must then carry as an
    IP SAN), or "require" (unchecked). With tls_ca = null it is "require" whatever this says.
  EOT
  type        = string
  default     = "verify-ca"

  validation {
    condition     = contains(["require", "verify-ca", "verify-full"], var.postgres_sslmode)
    error_message = "postgres_sslmode must be \"verify-ca\", \"verify-full\" or \"require\" (the servers take TLS logins only)."
  }
}

variable "postgres_port" {
  description = "TCP port PostgreSQL listens on."
  type        = number
  default     = 5432

  validation {
    condition     = var.postgres_port >= 1024 && var.postgres_port <= 65535 && var.postgres_port == floor(var.postgres_port)
    error_message = "postgres_port must be a whole number from 1024 to 65535."
  }
}

variable "postgres_user" {
  description = "Role the controllers and the logical-replication subscriptions log in as: least privilege on PostgreSQL 16 and later, a superuser on 15 (see controller-role.sql)."
  type        = string
  default     = "failover"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.postgres_user))
    error_message = "postgres_user must be a lower-case PostgreSQL identifier (letters, digits, '_')."
  }
}

variable "ssm_parameters" {
  description = <<-EOT
    Names of the SSM parameters, in this AWS region, that the host reads at boot (their
    values never pass through Terraform): postgres_password (SecureString, postgres_user's
    password), fleet_key (SecureString, the controllers' shared key), tls_certificate and
    tls_key (PostgreSQL's server certificate and its SecureString key, PEM), tls_ca (the
    CA certificate, PEM, that signed every region's server certificate; null, said
    explicitly, leaves the certificates unchecked: anyone on the path who answers TLS is
    believed), topology (the fleet's Terraform outputs as `terraform
    output -json` prints them, which test-regions writes; the host waits for it). Create the
    others before apply.
  EOT
  type = object({
    postgres_password = string
    fleet_key         = string
    tls_certificate   = string
    tls_key           = string
    tls_ca            = string # null: unchecked, see postgres_sslmode
    topology          = string
  })

  validation {
    condition     = alltrue([for name in values(var.ssm_parameters) : name == null || can(regex("^/[A-Za-z0-9_.\\-/]+$", name))])
    error_message = "ssm_parameters must hold SSM parameter names such as \"/failover/postgres-password\"."
  }
}

variable "failover_wheel_url" {
  description = "Where the host gets the failover wheel (`python -m build --wheel`): an https:// URL, or an s3://bucket/key object read with the controller role (controller-iam grants it). Either ends in the wheel's own file name, which pip reads the version from."
  type        = string

  validation {
    condition     = can(regex("^(https|s3)://[A-Za-z0-9._~:@%/+=-]+/[A-Za-z0-9_.+-]+\\.whl$", var.failover_wheel_url))
    error_message = "failover_wheel_url must be an https:// or s3:// URL ending in the wheel's file name, e.g. \"s3://my-bucket/failover-0.1.0-py3-none-any.whl\"."
  }
}

variable "operator_cidrs" {
  description = "CIDRs of operators' networks that may reach the controller API (failover status, switchover, fence...). Empty: only the other regions."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.operator_cidrs : can(cidrhost(cidr, 0)) && can(regex("^[0-9.]+/[0-9]+$", cidr))])
    error_message = "operator_cidrs must hold IPv4 CIDRs, e.g. [\"192.0.2.0/24\"]."
  }
}

variable "databases" {
  description = "Databases to create, one per failover service, each with wal_level = logical."
  type        = list(string)

  validation {
    condition     = length(var.databases) > 0 && alltrue([for db in var.databases : can(regex("^[a-z_][a-z0-9_]{0,62}$", db))])
    error_message = "databases must list at least one lower-case PostgreSQL identifier."
  }
}

variable "controller_port" {
  description = "TCP port of the failover controller's HTTP API on the instance."
  type        = number
  default     = 8700

  validation {
    condition     = var.controller_port >= 1024 && var.controller_port <= 65535 && var.controller_port == floor(var.controller_port)
    error_message = "controller_port must be a whole number from 1024 to 65535."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
