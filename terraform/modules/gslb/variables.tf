variable "zone_name" {
  description = "DNS zone the failover records live in, e.g. \"db.example.com\" (a trailing dot is accepted)."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]\\.?$", var.zone_name))
    error_message = "zone_name must be a lower-case DNS name with at least two labels, e.g. \"db.example.com\"."
  }
}

variable "private_zone" {
  description = "Create a private hosted zone, answered only inside vpc_associations, instead of a public one."
  type        = bool
  default     = false
}

variable "vpc_associations" {
  description = "VPCs (with their AWS regions) that can resolve the private zone; must be empty for a public zone."
  type = list(object({
    vpc_id     = string
    vpc_region = string
  }))
  default = []
}

variable "services" {
  description = <<-EOT
    Failover services keyed by service name. writer_record and reader_record are
    fully qualified names inside zone_name; writer_address and reader_addresses
    are only the initial values: afterwards the failover controller owns them.
  EOT
  type = map(object({
    writer_record    = string
    reader_record    = optional(string)
    ttl              = optional(number, 30)
    writer_address   = string
    reader_addresses = optional(list(string), [])
  }))

  validation {
    condition     = length(var.services) > 0 && alltrue([for name in keys(var.services) : can(regex("^[a-z0-9][a-z0-9_-]*$", name))])
    error_message = "services must have at least one entry, keyed by a service name of lower-case letters, digits, '_' and '-'."
  }

  validation {
    # Clients keep the old writer for up to the TTL after a failover, so the
    # TTL adds straight to the recovery time.
    condition     = alltrue([for s in values(var.services) : s.ttl >= 1 && s.ttl <= 300 && s.ttl == floor(s.ttl)])
    error_message = "every service's ttl must be a whole number of seconds from 1 to 300: a longer TTL keeps clients on the old writer after a failover."
  }

  validation {
    condition = alltrue([
      for s in values(var.services) :
      can(cidrhost("${s.writer_address}/32", 0)) && alltrue([for a in s.reader_addresses : can(cidrhost("${a}/32", 0))])
    ])
    error_message = "writer_address and reader_addresses must be IPv4 addresses."
  }

  validation {
    condition     = alltrue([for s in values(var.services) : s.reader_record != null || length(s.reader_addresses) == 0])
    error_message = "a service with reader_addresses needs a reader_record."
  }
}

variable "force_destroy" {
  description = "Let terraform destroy delete records in the zone that Terraform does not manage."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to the hosted zone."
  type        = map(string)
  default     = {}
}
