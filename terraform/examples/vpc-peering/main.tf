# Peer two existing VPCs in different regions so that their failover
# controllers and PostgreSQL servers reach each other on private addresses.
provider "aws" {
  alias  = "requester"
  region = var.requester.aws_region
}

provider "aws" {
  alias  = "accepter"
  region = var.accepter.aws_region
}

module "peering" {
  source    = "../../modules/vpc-peering"
  providers = { aws.requester = aws.requester, aws.accepter = aws.accepter }

  name      = "failover-${var.requester.aws_region}-${var.accepter.aws_region}"
  requester = var.requester
  accepter  = var.accepter
}
