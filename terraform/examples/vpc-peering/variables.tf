variable "requester" {
  description = "The VPC asking for the peering: its AWS region, ID, CIDR and route table."
  type = object({
    aws_region     = string
    vpc_id         = string
    vpc_cidr       = string
    route_table_id = string
  })
}

variable "accepter" {
  description = "The VPC accepting the peering: its AWS region, ID, CIDR and route table."
  type = object({
    aws_region     = string
    vpc_id         = string
    vpc_cidr       = string
    route_table_id = string
  })
}
