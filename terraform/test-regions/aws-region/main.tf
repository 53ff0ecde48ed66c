# The fleet's regions in one AWS region, made with that region's provider: their hosts
# (modules/region), this region's halves of the VPC peerings, and the topology parameter
# the hosts wait for. test-regions calls it once per AWS region it has a provider for.

# Only where regions live here: an unused provider slot makes no request at all.
data "aws_region" "current" {
  count = length(var.regions) > 0 ? 1 : 0
}

locals {
  peerings_requested_here = { for key, p in var.peerings : key => p if contains(keys(var.regions), p.requester) }
  peerings_accepted_here  = { for key, p in var.peerings : key => p if contains(keys(var.regions), p.accepter) }
}

module "region" {
  source   = "../../modules/region"
  for_each = var.regions

  name       = each.key
  priority   = each.value.priority
  vpc_cidr   = each.value.cidr
  peer_cidrs = [for cidr in var.fleet_cidrs : cidr if cidr != each.value.cidr]

  fleet_name             = var.fleet_name
  instance_type          = var.instance_type
  postgres_major_version = var.postgres_major_version
  controller_port        = var.controller_port
  databases              = var.databases
  ssm_parameters         = var.ssm_parameters
  postgres_sslmode       = var.postgres_sslmode
  failover_wheel_url     = var.failover_wheel_url
  operator_cidrs         = var.operator_cidrs
  tags                   = var.tags
}

module "peering_request" {
  source   = "../../modules/vpc-peering/request"
  for_each = local.peerings_requested_here

  name      = "${var.fleet_name}-${each.value.requester}-${each.value.accepter}"
  requester = var.vpcs[each.value.requester]
  accepter  = var.vpcs[each.value.accepter]
  tags      = var.tags
}

module "peering_accept" {
  source   = "../../modules/vpc-peering/accept"
  for_each = local.peerings_accepted_here

  name          = "${var.fleet_name}-${each.value.requester}-${each.value.accepter}"
  connection_id = var.requested_connections[each.key]
  accepter      = var.vpcs[each.value.accepter]
  requester     = var.vpcs[each.value.requester]
  tags          = var.tags
}

# The requester's route waits for the accepter's half, wherever that was made.
resource "aws_route" "requester_to_accepter" {
  for_each = local.peerings_requested_here

  route_table_id            = var.vpcs[each.value.requester].route_table_id
  destination_cidr_block    = var.vpcs[each.value.accepter].vpc_cidr
  vpc_peering_connection_id = var.accepted_connections[each.key]
}

# Written once every host exists (it holds their addresses); the hosts wait for it at
# boot and write their topology from it. Not a secret: names, addresses, records.
resource "aws_ssm_parameter" "topology" {
  count = length(var.regions) > 0 ? 1 : 0

  name        = var.ssm_parameters.topology
  description = "failover fleet ${var.fleet_name}: its Terraform outputs, from which each host writes its topology"
  type        = "String"
  # Standard holds 4 KB, about a dozen regions; larger fleets move to Advanced by themselves.
  tier  = "Intelligent-Tiering"
  value = var.topology_outputs
  tags  = var.tags

  lifecycle {
    precondition {
      condition     = data.aws_region.current[0].name == var.aws_region
      error_message = "This module's provider is in ${data.aws_region.current[0].name}, not ${var.aws_region}: test-regions wired the wrong provider."
    }
  }
}
