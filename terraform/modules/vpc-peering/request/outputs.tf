output "id" {
  description = "ID of the VPC peering connection (pending until the accepter's half accepts it)."
  value       = aws_vpc_peering_connection.this.id
}
