# The requester's half of a VPC peering: the request, made with the requester
# region's provider. The accepter's half (../accept) accepts it.
resource "aws_vpc_peering_connection" "this" {
  vpc_id      = var.requester.vpc_id
  peer_vpc_id = var.accepter.vpc_id
  peer_region = var.accepter.aws_region
  auto_accept = false
  tags        = merge(var.tags, { Name = var.name })
}
