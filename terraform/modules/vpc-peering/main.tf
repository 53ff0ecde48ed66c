# Inter-region peering: the requester asks, the accepter's own provider
# accepts, and each side routes the other's CIDR through the connection.
resource "aws_vpc_peering_connection" "this" {
  provider = aws.requester

  vpc_id      = var.requester.vpc_id
  peer_vpc_id = var.accepter.vpc_id
  peer_region = var.accepter.aws_region
  auto_accept = false
  tags        = merge(var.tags, { Name = var.name })
}

resource "aws_vpc_peering_connection_accepter" "this" {
  provider = aws.accepter

  vpc_peering_connection_id = aws_vpc_peering_connection.this.id
  auto_accept               = true
  tags                      = merge(var.tags, { Name = var.name })
}

resource "aws_route" "requester_to_accepter" {
  provider = aws.requester

  route_table_id            = var.requester.route_table_id
  destination_cidr_block    = var.accepter.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection_accepter.this.id
}

resource "aws_route" "accepter_to_requester" {
  provider = aws.accepter

  route_table_id            = var.accepter.route_table_id
  destination_cidr_block    = var.requester.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection_accepter.this.id
}
