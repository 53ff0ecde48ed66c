# `failover topology from-terraform` reads the three failover_* outputs; keep
# their shape in step with failover/topology_from_terraform.py.

output "failover_fleet" {
  description = "Fleet-wide settings for the topology's fleet.toml: name and the Route 53 zone."
  value = {
    name = var.fleet_name
    dns = {
      zone           = module.gslb.zone_name
      hosted_zone_id = module.gslb.zone_id
      endpoint_url   = var.aws_endpoint_url
      region_name    = var.regions[0].aws_region
    }
  }
}

output "failover_regions" {
  description = "Per region, for <region>.toml: priority, published address, controller URL and PostgreSQL endpoint (no password)."
  value = {
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
}

output "failover_services" {
  description = "Per service, for fleet.toml: database, absolute writer and reader record names, TTL."
  value = {
    for name, s in module.gslb.services : name => merge(s, { database = local.databases[name] })
  }
}

output "controller_policy_arn" {
  description = "ARN of the least-privilege Route 53 policy attached to every controller role."
  value       = module.controller_iam.policy_arn
}

output "postgres_password_parameter" {
  description = "SSM parameter holding the PostgreSQL password; export it as the env var the topology names (FAILOVER_PG_PASSWORD by default)."
  value       = var.postgres_password_parameter
}
