output "id" {
  description = "ID of the peering connection, once accepted: routes on the requester's side wait for it."
  value       = aws_vpc_peering_connection_accepter.this.id
}
