# The accepter's half of a VPC peering, made with the accepter region's provider:
# accept the request (../request) and route the requester's CIDR through it.
resource "aws_vpc_peering_connection_accepter" "this" {
  vpc_peering_connection_id = var.connection_id
  auto_accept               = true
  tags                      = merge(var.tags, { Name = var.name })
}

resource "aws_route" "accepter_to_requester" {
  route_table_id            = var.accepter.route_table_id
  destination_cidr_block    = var.requester.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection_accepter.this.id
}
