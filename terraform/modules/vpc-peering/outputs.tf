output "id" {
  description = "ID of the VPC peering connection."
  value       = module.request.id
}
