output "policy_arn" {
  description = "ARN of the controller policy."
  value       = aws_iam_policy.controller.arn
}

output "policy_json" {
  description = "The policy document as attached."
  value       = data.aws_iam_policy_document.controller.json
}

output "record_names" {
  description = "Record names the policy allows, normalized (lower case, no trailing dot)."
  value       = local.normalized_record_names
}
