# For a fleet whose regions and databases already exist (RDS, hand-built
# hosts): only the private GSLB zone and the controllers' Route 53 policy.
provider "aws" {
  region = var.aws_region
}

module "gslb" {
  source = "../../modules/gslb"

  zone_name        = var.zone_name
  private_zone     = true
  vpc_associations = var.vpcs
  services = {
    for name in ["orders", "billing"] : name => {
      writer_record    = "${name}.${var.zone_name}"
      reader_record    = "${name}-ro.${var.zone_name}"
      ttl              = 15
      writer_address   = var.writer_address
      reader_addresses = var.reader_addresses
    }
  }
}

module "controller_iam" {
  source = "../../modules/controller-iam"

  policy_name  = "failover-controller-route53"
  zone_id      = module.gslb.zone_id
  record_names = module.gslb.record_names
  role_names   = var.controller_role_names
}
