variable "name" {
  description = "Name tag of the peering connection."
  type        = string
}

variable "connection_id" {
  description = "ID of the peering connection the requester's half asked for."
  type        = string
}

variable "accepter" {
  description = "The accepting VPC's route table, in this provider's region."
  type = object({
    route_table_id = string
  })
}

variable "requester" {
  description = "The requesting VPC's CIDR, routed through the connection."
  type = object({
    vpc_cidr = string
  })
}

variable "tags" {
  description = "Tags added to the peering connection."
  type        = map(string)
  default     = {}
}
