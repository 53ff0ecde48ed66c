variable "policy_name" {
  description = "Name of the IAM policy."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,128}$", var.policy_name))
    error_message = "policy_name must be 1-128 characters of letters, digits and +=,.@_-."
  }
}

variable "zone_id" {
  description = "Route 53 hosted zone ID the controllers may change (with or without the /hostedzone/ prefix)."
  type        = string

  validation {
    condition     = can(regex("^(/hostedzone/)?[A-Z0-9]{1,32}$", var.zone_id))
    error_message = "zone_id must be a Route 53 hosted zone ID such as \"Z0123456789ABCDEFGHIJ\"."
  }
}

variable "record_names" {
  description = "The only record names the controllers may change: every service's writer and reader record (trailing dots and case are normalized)."
  type        = list(string)

  validation {
    condition = length(var.record_names) > 0 && alltrue([
      for name in var.record_names : can(regex("^([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9]\\.?$", name))
    ])
    error_message = "record_names must list at least one fully qualified DNS name, e.g. \"orders-rw.db.example.com\"."
  }
}

variable "role_names" {
  description = "IAM roles to attach the policy to, keyed by a name known before apply (e.g. the region name)."
  type        = map(string)
  default     = {}
}

variable "boot_reads" {
  description = "Per role (the keys of role_names): what its host reads at boot, the region module's boot_reads output. Each role may GetParameter exactly these parameters and GetObject exactly these S3 objects (bucket/key), nothing else."
  type = map(object({
    parameter_arns = list(string)
    s3_objects     = optional(list(string), [])
  }))
  default = {}

  validation {
    condition     = alltrue([for reads in values(var.boot_reads) : alltrue([for arn in reads.parameter_arns : can(regex("^arn:[a-z-]+:ssm:[a-z0-9-]+:[0-9]{12}:parameter/", arn))])])
    error_message = "boot_reads[*].parameter_arns must be SSM parameter ARNs, e.g. \"arn:aws:ssm:us-east-1:123456789012:parameter/failover/fleet-key\"."
  }
}

variable "path" {
  description = "IAM path of the policy."
  type        = string
  default     = "/"

  validation {
    condition     = can(regex("^/([A-Za-z0-9+=,.@_-]+/)*$", var.path))
    error_message = "path must start and end with '/', e.g. \"/failover/\"."
  }
}

variable "tags" {
  description = "Tags added to the policy."
  type        = map(string)
  default     = {}
}
