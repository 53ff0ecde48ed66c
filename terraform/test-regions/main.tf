locals {
  tags = merge(var.tags, { "failover:fleet" = var.fleet_name })

  databases = { for name, s in var.services : name => coalesce(s.database, replace(name, "-", "_")) }
  cidrs     = [for r in var.regions : r.cidr]

  regions = { for r in [module.first, module.second, module.third] : r.name => r }
  # The highest priority region starts as every service's writer; from then on
  # which region holds the writer is the controllers' business, not Terraform's.
  initial_writer   = [for r in var.regions : r.name if r.priority == max([for x in var.regions : x.priority]...)][0]
  zone_name        = trimsuffix(var.zone_name, ".")
  region_databases = sort(distinct(values(local.databases)))
}

module "first" {
  source    = "../modules/region"
  providers = { aws = aws.first }

  name       = var.regions[0].name
  priority   = var.regions[0].priority
  vpc_cidr   = var.regions[0].cidr
  peer_cidrs = [for c in local.cidrs : c if c != var.regions[0].cidr]

  fleet_name                  = var.fleet_name
  instance_type               = var.instance_type
  postgres_major_version      = var.postgres_major_version
  postgres_password_parameter = var.postgres_password_parameter
  controller_port             = var.controller_port
  databases                   = local.region_databases
  tags                        = local.tags
}

module "second" {
  source    = "../modules/region"
  providers = { aws = aws.second }

  name       = var.regions[1].name
  priority   = var.regions[1].priority
  vpc_cidr   = var.regions[1].cidr
  peer_cidrs = [for c in local.cidrs : c if c != var.regions[1].cidr]

  fleet_name                  = var.fleet_name
  instance_type               = var.instance_type
  postgres_major_version      = var.postgres_major_version
  postgres_password_parameter = var.postgres_password_parameter
  controller_port             = var.controller_port
  databases                   = local.region_databases
  tags                        = local.tags
}

module "third" {
  source    = "../modules/region"
  providers = { aws = aws.third }

  name       = var.regions[2].name
  priority   = var.regions[2].priority
  vpc_cidr   = var.regions[2].cidr
  peer_cidrs = [for c in local.cidrs : c if c != var.regions[2].cidr]

  fleet_name                  = var.fleet_name
  instance_type               = var.instance_type
  postgres_major_version      = var.postgres_major_version
  postgres_password_parameter = var.postgres_password_parameter
  controller_port             = var.controller_port
  databases                   = local.region_databases
  tags                        = local.tags
}

module "peering_first_second" {
  source    = "../modules/vpc-peering"
  providers = { aws.requester = aws.first, aws.accepter = aws.second }

  name      = "${var.fleet_name}-${module.first.name}-${module.second.name}"
  requester = module.first
  accepter  = module.second
  tags      = local.tags
}

module "peering_first_third" {
  source    = "../modules/vpc-peering"
  providers = { aws.requester = aws.first, aws.accepter = aws.third }

  name      = "${var.fleet_name}-${module.first.name}-${module.third.name}"
  requester = module.first
  accepter  = module.third
  tags      = local.tags
}

module "peering_second_third" {
  source    = "../modules/vpc-peering"
  providers = { aws.requester = aws.second, aws.accepter = aws.third }

  name      = "${var.fleet_name}-${module.second.name}-${module.third.name}"
  requester = module.second
  accepter  = module.third
  tags      = local.tags
}

module "gslb" {
  source    = "../modules/gslb"
  providers = { aws = aws.first }

  zone_name        = local.zone_name
  private_zone     = var.private_zone
  vpc_associations = var.private_zone ? [for r in values(local.regions) : { vpc_id = r.vpc_id, vpc_region = r.aws_region }] : []
  services = {
    for name, s in var.services : name => {
      writer_record    = "${name}.${local.zone_name}"
      reader_record    = "${name}-ro.${local.zone_name}"
      ttl              = s.ttl
      writer_address   = local.regions[local.initial_writer].address
      reader_addresses = [for r in values(local.regions) : r.address if r.name != local.initial_writer]
    }
  }
  tags = local.tags
}

module "controller_iam" {
  source    = "../modules/controller-iam"
  providers = { aws = aws.first }

  policy_name  = "${var.fleet_name}-controller-route53"
  zone_id      = module.gslb.zone_id
  record_names = module.gslb.record_names
  role_names   = { for name, r in local.regions : name => r.controller_role_name }
  tags         = local.tags
}
