output "regions" {
  description = "Every region made here: the region module's outputs, by region name."
  value       = module.region
}

output "requested_connections" {
  description = "Peering connection ID by peering key, for the peerings requested from here."
  value       = { for key, request in module.peering_request : key => request.id }
}

output "accepted_connections" {
  description = "Accepted peering connection ID by peering key, for the peerings accepted here."
  value       = { for key, accept in module.peering_accept : key => accept.id }
}
