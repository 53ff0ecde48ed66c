variable "fleet_name" {
  description = "Name of the failover fleet: the topology's fleet name and the prefix of every resource name."
  type        = string
  default     = "failover-test"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.fleet_name))
    error_message = "fleet_name must be 1-31 characters of lower-case letters, digits and '-', starting with a letter."
  }
}

variable "aws_endpoint_url" {
  description = "Send every AWS API call to this emulator (e.g. a moto server, \"http://127.0.0.1:5000\") instead of AWS; null for real AWS."
  type        = string
  default     = null

  validation {
    condition     = var.aws_endpoint_url == null || can(regex("^https?://[^/\\s]+/?$", var.aws_endpoint_url))
    error_message = "aws_endpoint_url must be an http:// or https:// URL with a host and no path, e.g. \"http://127.0.0.1:5000\", or null."
  }
}

variable "regions" {
  description = "The fleet's regions, at least one: the topology's region name, the AWS region, the VPC CIDR and the failover priority (higher wins). The highest priority region starts as every service's writer. Regions may share an AWS region (each has its own VPC); at most five AWS regions, one per provider slot in providers.tf."
  type = list(object({
    name       = string
    aws_region = string
    cidr       = string
    priority   = number
  }))
  default = [
    { name = "us-east-1", aws_region = "us-east-1", cidr = "10.10.0.0/16", priority = 100 },
    { name = "us-west-2", aws_region = "us-west-2", cidr = "10.20.0.0/16", priority = 50 },
    { name = "eu-west-1", aws_region = "eu-west-1", cidr = "10.30.0.0/16", priority = 10 },
  ]

  validation {
    condition     = length(var.regions) >= 1 && length(distinct([for r in var.regions : r.aws_region])) <= 5
    error_message = "regions must list at least one region, in at most five AWS regions: this root module has one aliased provider per AWS region, five of them (providers.tf); more regions can share AWS regions."
  }

  validation {
    condition     = alltrue([for r in var.regions : can(regex("^[a-z0-9][a-z0-9-]{0,62}$", r.name))]) && length(distinct([for r in var.regions : r.name])) == length(var.regions)
    error_message = "regions[*].name must be unique, lower-case letters, digits and '-' (they become <name>.toml in the topology)."
  }

  validation {
    condition     = alltrue([for r in var.regions : can(regex("^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]$", r.aws_region))])
    error_message = "regions[*].aws_region must be AWS region names such as \"us-east-1\", \"us-west-2\", \"eu-west-1\"."
  }

  validation {
    condition     = alltrue([for r in var.regions : can(cidrhost(r.cidr, 0)) && can(regex("^[0-9.]+/(1[6-9]|2[0-4])$", r.cidr))])
    error_message = "regions[*].cidr must be IPv4 CIDRs from /16 to /24, e.g. \"10.10.0.0/16\"."
  }

  validation {
    # Two CIDRs overlap exactly when their network addresses agree at the
    # shorter prefix length; peered VPCs must not overlap.
    condition = try(alltrue(flatten([
      for i, a in var.regions : [
        for j, b in var.regions : j <= i || (
          cidrhost("${cidrhost(a.cidr, 0)}/${min(tonumber(split("/", a.cidr)[1]), tonumber(split("/", b.cidr)[1]))}", 0) !=
          cidrhost("${cidrhost(b.cidr, 0)}/${min(tonumber(split("/", a.cidr)[1]), tonumber(split("/", b.cidr)[1]))}", 0)
        )
      ]
    ])), true)
    error_message = "regions[*].cidr must not overlap: the regions' VPCs are peered and route to each other."
  }

  validation {
    condition     = alltrue([for r in var.regions : r.priority == floor(r.priority)]) && length(distinct([for r in var.regions : r.priority])) == length(var.regions)
    error_message = "regions[*].priority must be distinct whole numbers, so the initial writer region is unambiguous."
  }
}

variable "zone_name" {
  description = "DNS zone of the failover records; each service gets <service>.<zone> (writer) and <service>-ro.<zone> (readers)."
  type        = string
  default     = "db.failover.internal"

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]\\.?$", var.zone_name))
    error_message = "zone_name must be a lower-case DNS name with at least two labels, e.g. \"db.example.com\"."
  }
}

variable "private_zone" {
  description = "Make the zone private to the regions' VPCs (the published addresses are private IPs reached over peering); false makes it public."
  type        = bool
  default     = false
}

variable "services" {
  description = "Failover services keyed by name (a DNS label): database defaults to the name with '-' replaced by '_'; ttl is the records' TTL in seconds."
  type = map(object({
    database = optional(string)
    ttl      = optional(number, 30)
  }))
  default = { orders = {} }

  validation {
    condition     = length(var.services) > 0 && alltrue([for name in keys(var.services) : can(regex("^[a-z][a-z0-9-]{0,50}$", name))])
    error_message = "services must have at least one entry, keyed by a DNS label: lower-case letters, digits and '-', starting with a letter."
  }

  validation {
    # Terraform evaluates both sides of ||, so a null database is matched as "x".
    condition     = alltrue([for s in values(var.services) : s.database == null || can(regex("^[a-z_][a-z0-9_]{0,62}$", coalesce(s.database, "x")))])
    error_message = "services[*].database must be a lower-case PostgreSQL identifier (letters, digits, '_')."
  }

  validation {
    condition     = alltrue([for s in values(var.services) : s.ttl >= 1 && s.ttl <= 300 && s.ttl == floor(s.ttl)])
    error_message = "services[*].ttl must be a whole number of seconds from 1 to 300: a longer TTL keeps clients on the old writer after a failover."
  }
}

variable "instance_type" {
  description = "EC2 instance type of each region's PostgreSQL host."
  type        = string
  default     = "t3.small"
}

variable "postgres_major_version" {
  description = "PostgreSQL major version on every region (15, 16 or 17; 15 makes the controller's role a superuser, see modules/region)."
  type        = number
  default     = 16
}

variable "ssm_parameters" {
  description = "Names of the SSM parameters every host reads at boot (modules/region): create postgres_password, fleet_key and tls_key as SecureString, and tls_certificate and tls_ca (unless postgres_sslmode is \"require\"), in each AWS region before apply; this root writes topology there after the hosts exist."
  type = object({
    postgres_password = optional(string, "/failover/postgres-password")
    fleet_key         = optional(string, "/failover/fleet-key")
    tls_certificate   = optional(string, "/failover/postgres-tls-certificate")
    tls_key           = optional(string, "/failover/postgres-tls-key")
    tls_ca            = optional(string, "/failover/postgres-tls-ca")
    topology          = optional(string, "/failover/topology")
  })
  default = {}
}

variable "postgres_sslmode" {
  description = "How controllers and subscriptions check the regions' PostgreSQL certificates: verify-ca (against ssm_parameters.tls_ca), verify-full, or require (unchecked, and no tls_ca is read); see modules/region."
  type        = string
  default     = "verify-ca"

  validation {
    condition     = contains(["require", "verify-ca", "verify-full"], var.postgres_sslmode)
    error_message = "postgres_sslmode must be \"verify-ca\", \"verify-full\" or \"require\" (the servers take TLS logins only)."
  }
}

variable "failover_wheel_url" {
  description = "Where every host gets the failover wheel (`python -m build --wheel`): an https:// URL or an s3://bucket/key object, ending in the wheel's file name."
  type        = string
}

variable "operator_cidrs" {
  description = "CIDRs of operators' networks that may reach every controller's API, besides the regions."
  type        = list(string)
  default     = []
}

variable "controller_port" {
  description = "TCP port of each controller's HTTP API."
  type        = number
  default     = 8700
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
