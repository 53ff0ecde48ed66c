variable "aws_region" {
  description = "The AWS region of this module's provider, where every region in regions lives."
  type        = string
}

variable "regions" {
  description = "The fleet's regions in this AWS region, by name: priority and VPC CIDR. May be empty."
  type = map(object({
    priority = number
    cidr     = string
  }))
}

variable "fleet_cidrs" {
  description = "The VPC CIDRs of every region of the fleet, here and elsewhere."
  type        = list(string)
}

variable "vpcs" {
  description = "Every region's VPC, by region name, for the peerings."
  type = map(object({
    vpc_id         = string
    vpc_cidr       = string
    route_table_id = string
    aws_region     = string
  }))
}

variable "peerings" {
  description = "Every peering of the fleet, by key: the requester and accepter region names. This module makes the halves whose side lives here."
  type = map(object({
    requester = string
    accepter  = string
  }))
}

variable "requested_connections" {
  description = "Peering connection ID by peering key, from every AWS region's requester halves."
  type        = map(string)
}

variable "accepted_connections" {
  description = "Accepted peering connection ID by peering key, from every AWS region's accepter halves."
  type        = map(string)
}

variable "topology_outputs" {
  description = "The fleet's failover_* outputs as `terraform output -json` prints them: the topology parameter's value."
  type        = string
}

variable "fleet_name" {
  description = "Name of the failover fleet."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type of each host."
  type        = string
}

variable "postgres_major_version" {
  description = "PostgreSQL major version of each host."
  type        = number
}

variable "controller_port" {
  description = "TCP port of each controller's HTTP API."
  type        = number
}

variable "databases" {
  description = "The services' databases, made on every host."
  type        = list(string)
}

variable "ssm_parameters" {
  description = "Names of the SSM parameters the hosts read at boot (see modules/region)."
  type = object({
    postgres_password = string
    fleet_key         = string
    tls_certificate   = string
    tls_key           = string
    tls_ca            = string
    topology          = string
  })
}

variable "postgres_sslmode" {
  description = "How controllers and subscriptions check the regions' PostgreSQL certificates (see modules/region)."
  type        = string
}

variable "failover_wheel_url" {
  description = "Where the hosts get the failover wheel."
  type        = string
}

variable "operator_cidrs" {
  description = "CIDRs that may reach the controller API besides the regions."
  type        = list(string)
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
}
