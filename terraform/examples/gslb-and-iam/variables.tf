variable "aws_region" {
  description = "AWS region of the provider (Route 53 and IAM are global; this only picks the API endpoint)."
  type        = string
  default     = "us-east-1"
}

variable "zone_name" {
  description = "Private DNS zone of the failover records."
  type        = string
  default     = "db.example.internal"
}

variable "vpcs" {
  description = "Existing VPCs, one per region, that resolve the private zone."
  type = list(object({
    vpc_id     = string
    vpc_region = string
  }))
}

variable "writer_address" {
  description = "Private address of the region that holds the writers today."
  type        = string
}

variable "reader_addresses" {
  description = "Private addresses of the reader regions."
  type        = list(string)
}

variable "controller_role_names" {
  description = "Existing IAM roles of the controllers, keyed by region name."
  type        = map(string)
}
