variable "name" {
  description = "Name tag of the peering connection."
  type        = string
}

variable "requester" {
  description = "The VPC asking for the peering, in this provider's region."
  type = object({
    vpc_id = string
  })
}

variable "accepter" {
  description = "The VPC to peer with, and its AWS region."
  type = object({
    vpc_id     = string
    aws_region = string
  })
}

variable "tags" {
  description = "Tags added to the peering connection."
  type        = map(string)
  default     = {}
}
