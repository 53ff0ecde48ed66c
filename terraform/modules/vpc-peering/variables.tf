variable "name" {
  description = "Name tag of the peering connection."
  type        = string

  validation {
    condition     = length(var.name) > 0 && length(var.name) <= 255
    error_message = "name must be 1-255 characters."
  }
}

variable "requester" {
  description = "The VPC asking for the peering, reached through the aws.requester provider."
  type = object({
    vpc_id         = string
    vpc_cidr       = string
    route_table_id = string
  })
}

variable "accepter" {
  description = "The VPC accepting the peering, reached through the aws.accepter provider, and its AWS region."
  type = object({
    vpc_id         = string
    vpc_cidr       = string
    route_table_id = string
    aws_region     = string
  })

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]$", var.accepter.aws_region))
    error_message = "accepter.aws_region must be an AWS region name such as \"us-west-2\"."
  }
}

variable "tags" {
  description = "Tags added to the peering connection."
  type        = map(string)
  default     = {}
}
