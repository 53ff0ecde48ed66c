# Inter-region peering: the requester asks, the accepter's own provider
# accepts, and each side routes the other's CIDR through the connection.
# The two halves are modules of their own so that a caller with one provider per
# AWS region (test-regions) can make each half with that region's provider.
module "request" {
  source    = "./request"
  providers = { aws = aws.requester }

  name      = var.name
  requester = var.requester
  accepter  = var.accepter
  tags      = var.tags
}

module "accept" {
  source    = "./accept"
  providers = { aws = aws.accepter }

  name          = var.name
  connection_id = module.request.id
  accepter      = var.accepter
  requester     = var.requester
  tags          = var.tags
}

resource "aws_route" "requester_to_accepter" {
  provider = aws.requester

  route_table_id            = var.requester.route_table_id
  destination_cidr_block    = var.accepter.vpc_cidr
  vpc_peering_connection_id = module.accept.id
}

moved {
  from = aws_vpc_peering_connection.this
  to   = module.request.aws_vpc_peering_connection.this
}

moved {
  from = aws_vpc_peering_connection_accepter.this
  to   = module.accept.aws_vpc_peering_connection_accepter.this
}

moved {
  from = aws_route.accepter_to_requester
  to   = module.accept.aws_route.accepter_to_requester
}
