# `failover topology from-terraform` reads the three failover_* outputs (main.tf's
# local.failover_outputs, which every host also reads from the topology parameter).

output "failover_fleet" {
  description = "Fleet-wide settings for the topology's fleet.toml: name and the Route 53 zone."
  value       = local.failover_outputs.failover_fleet
}

output "failover_regions" {
  description = "Per region, for <region>.toml: priority, published address, controller URL and PostgreSQL endpoint (no password)."
  value       = local.failover_outputs.failover_regions
}

output "failover_services" {
  description = "Per service, for fleet.toml: database, absolute writer and reader record names, TTL."
  value       = local.failover_outputs.failover_services
}

output "controller_policy_arn" {
  description = "ARN of the least-privilege Route 53 policy attached to every controller role."
  value       = module.controller_iam.policy_arn
}

output "ssm_parameters" {
  description = "The SSM parameters every host reads at boot (create all but topology in each AWS region before apply); export the password as the env var the topology names (FAILOVER_PG_PASSWORD by default) where you run failover."
  value       = var.ssm_parameters
}

output "instance_ids" {
  description = "Each region's host, by region name."
  value       = { for name, r in local.regions : name => r.instance_id }
}
