output "peering_connection_id" {
  description = "ID of the VPC peering connection."
  value       = module.peering.id
}
