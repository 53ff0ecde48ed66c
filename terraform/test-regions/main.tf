locals {
  tags = merge(var.tags, { "failover:fleet" = var.fleet_name })

  # With unchecked certificates the hosts neither need nor may read the CA parameter.
  ssm_parameters = var.postgres_sslmode == "require" ? merge(var.ssm_parameters, { tls_ca = null }) : var.ssm_parameters

  databases = { for name, s in var.services : name => coalesce(s.database, replace(name, "-", "_")) }
  cidrs     = [for r in var.regions : r.cidr]

  # The AWS regions in use, in order of first appearance: aws_regions[N] is provider slotN's.
  aws_regions = distinct([for r in var.regions : r.aws_region])
  regions_in = [
    for aws_region in local.aws_regions : { for r in var.regions : r.name => r if r.aws_region == aws_region }
  ]

  # Each pair of regions peers once; the one listed first in var.regions asks.
  peerings = merge([
    for i, a in var.regions : {
      for j, b in var.regions : "${a.name}--${b.name}" => { requester = a.name, accepter = b.name } if j > i
    }
  ]...)

  regions = merge(
    module.aws_region_0.regions, module.aws_region_1.regions,
    module.aws_region_2.regions, module.aws_region_3.regions,
    module.aws_region_4.regions,
  )
  vpcs = {
    for name, r in local.regions : name => {
      vpc_id = r.vpc_id, vpc_cidr = r.vpc_cidr, route_table_id = r.route_table_id, aws_region = r.aws_region
    }
  }
  requested_connections = merge(
    module.aws_region_0.requested_connections, module.aws_region_1.requested_connections,
    module.aws_region_2.requested_connections, module.aws_region_3.requested_connections,
    module.aws_region_4.requested_connections,
  )
  accepted_connections = merge(
    module.aws_region_0.accepted_connections, module.aws_region_1.accepted_connections,
    module.aws_region_2.accepted_connections, module.aws_region_3.accepted_connections,
    module.aws_region_4.accepted_connections,
  )

  # The highest priority region starts as every service's writer; from then on
  # which region holds the writer is the controllers' business, not Terraform's.
  initial_writer   = [for r in var.regions : r.name if r.priority == max([for x in var.regions : x.priority]...)][0]
  zone_name        = trimsuffix(var.zone_name, ".")
  region_databases = sort(distinct(values(local.databases)))

  # `failover topology from-terraform` reads these three, from `terraform output -json`
  # on an operator's machine or from the topology parameter on every host; keep their
  # shape in step with failover/topology/terraform.py.
  failover_outputs = {
    failover_fleet = {
      name = var.fleet_name
      dns = {
        zone           = module.gslb.zone_name
        hosted_zone_id = module.gslb.zone_id
        endpoint_url   = var.aws_endpoint_url
        region_name    = var.regions[0].aws_region
      }
    }
    failover_regions = {
      for name, r in local.regions : name => {
        aws_region     = r.aws_region
        priority       = r.priority
        address        = r.address
        controller_url = r.controller_url
        postgres = {
          host = r.postgres.host
          port = r.postgres.port
          user = r.postgres.user
        }
      }
    }
    failover_services = {
      for name, s in module.gslb.services : name => merge(s, { database = local.databases[name] })
    }
  }
  # The topology parameter's value: as `terraform output -json` prints them.
  topology_outputs = jsonencode({ for name, value in local.failover_outputs : name => { value = value } })
}


# One module per provider slot (providers.tf): the regions in that AWS region, their
# halves of the peerings, and the topology parameter there.
module "aws_region_0" {
  source    = "./aws-region"
  providers = { aws = aws.slot0 }

  aws_region             = try(local.aws_regions[0], "")
  regions                = { for name, r in try(local.regions_in[0], {}) : name => { priority = r.priority, cidr = r.cidr } }
  fleet_cidrs            = local.cidrs
  vpcs                   = local.vpcs
  peerings               = local.peerings
  requested_connections  = local.requested_connections
  accepted_connections   = local.accepted_connections
  topology_outputs       = local.topology_outputs
  fleet_name             = var.fleet_name
  instance_type          = var.instance_type
  postgres_major_version = var.postgres_major_version
  controller_port        = var.controller_port
  databases              = local.region_databases
  ssm_parameters         = local.ssm_parameters
  postgres_sslmode       = var.postgres_sslmode
  failover_wheel_url     = var.failover_wheel_url
  operator_cidrs         = var.operator_cidrs
  tags                   = local.tags
}

module "aws_region_1" {
  source    = "./aws-region"
  providers = { aws = aws.slot1 }

  aws_region             = try(local.aws_regions[1], "")
  regions                = { for name, r in try(local.regions_in[1], {}) : name => { priority = r.priority, cidr = r.cidr } }
  fleet_cidrs            = local.cidrs
  vpcs                   = local.vpcs
  peerings               = local.peerings
  requested_connections  = local.requested_connections
  accepted_connections   = local.accepted_connections
  topology_outputs       = local.topology_outputs
  fleet_name             = var.fleet_name
  instance_type          = var.instance_type
  postgres_major_version = var.postgres_major_version
  controller_port        = var.controller_port
  databases              = local.region_databases
  ssm_parameters         = local.ssm_parameters
  postgres_sslmode       = var.postgres_sslmode
  failover_wheel_url     = var.failover_wheel_url
  operator_cidrs         = var.operator_cidrs
  tags                   = local.tags
}

module "aws_region_2" {
  source    = "./aws-region"
  providers = { aws = aws.slot2 }

  aws_region             = try(local.aws_regions[2], "")
  regions                = { for name, r in try(local.regions_in[2], {}) : name => { priority = r.priority, cidr = r.cidr } }
  fleet_cidrs            = local.cidrs
  vpcs                   = local.vpcs
  peerings               = local.peerings
  requested_connections  = local.requested_connections
  accepted_connections   = local.accepted_connections
  topology_outputs       = local.topology_outputs
  fleet_name             = var.fleet_name
  instance_type          = var.instance_type
  postgres_major_version = var.postgres_major_version
  controller_port        = var.controller_port
  databases              = local.region_databases
  ssm_parameters         = local.ssm_parameters
  postgres_sslmode       = var.postgres_sslmode
  failover_wheel_url     = var.failover_wheel_url
  operator_cidrs         = var.operator_cidrs
  tags                   = local.tags
}

module "aws_region_3" {
  source    = "./aws-region"
  providers = { aws = aws.slot3 }

  aws_region             = try(local.aws_regions[3], "")
  regions                = { for name, r in try(local.regions_in[3], {}) : name => { priority = r.priority, cidr = r.cidr } }
  fleet_cidrs            = local.cidrs
  vpcs                   = local.vpcs
  peerings               = local.peerings
  requested_connections  = local.requested_connections
  accepted_connections   = local.accepted_connections
  topology_outputs       = local.topology_outputs
  fleet_name             = var.fleet_name
  instance_type          = var.instance_type
  postgres_major_version = var.postgres_major_version
  controller_port        = var.controller_port
  databases              = local.region_databases
  ssm_parameters         = local.ssm_parameters
  postgres_sslmode       = var.postgres_sslmode
  failover_wheel_url     = var.failover_wheel_url
  operator_cidrs         = var.operator_cidrs
  tags                   = local.tags
}

module "aws_region_4" {
  source    = "./aws-region"
  providers = { aws = aws.slot4 }

  aws_region             = try(local.aws_regions[4], "")
  regions                = { for name, r in try(local.regions_in[4], {}) : name => { priority = r.priority, cidr = r.cidr } }
  fleet_cidrs            = local.cidrs
  vpcs                   = local.vpcs
  peerings               = local.peerings
  requested_connections  = local.requested_connections
  accepted_connections   = local.accepted_connections
  topology_outputs       = local.topology_outputs
  fleet_name             = var.fleet_name
  instance_type          = var.instance_type
  postgres_major_version = var.postgres_major_version
  controller_port        = var.controller_port
  databases              = local.region_databases
  ssm_parameters         = local.ssm_parameters
  postgres_sslmode       = var.postgres_sslmode
  failover_wheel_url     = var.failover_wheel_url
  operator_cidrs         = var.operator_cidrs
  tags                   = local.tags
}

module "gslb" {
  source    = "../modules/gslb"
  providers = { aws = aws.slot0 }

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
  providers = { aws = aws.slot0 }

  policy_name  = "${var.fleet_name}-controller-route53"
  zone_id      = module.gslb.zone_id
  record_names = module.gslb.record_names
  # Keys known before apply: the region names.
  role_names = { for r in var.regions : r.name => local.regions[r.name].controller_role_name }
  boot_reads = { for r in var.regions : r.name => local.regions[r.name].boot_reads }
  tags       = local.tags
}
