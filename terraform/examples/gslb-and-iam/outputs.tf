output "hosted_zone_id" {
  description = "Put this in fleet.toml as [dns.route53] hosted_zone_id."
  value       = module.gslb.zone_id
}

output "services" {
  description = "Writer and reader record names per service, for fleet.toml."
  value       = module.gslb.services
}

output "controller_policy_arn" {
  description = "ARN of the policy attached to every controller role."
  value       = module.controller_iam.policy_arn
}
