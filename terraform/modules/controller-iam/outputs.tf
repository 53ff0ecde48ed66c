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

output "boot_read_policies" {
  description = "Per role key, the inline policy that lets its host read what it reads at boot."
  value       = { for key, document in data.aws_iam_policy_document.boot_reads : key => document.json }
}
