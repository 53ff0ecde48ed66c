data "aws_partition" "current" {}

locals {
  zone_id = trimprefix(var.zone_id, "/hostedzone/")
  # The form IAM compares in route53:ChangeResourceRecordSetsNormalizedRecordNames.
  normalized_record_names = sort(distinct([for name in var.record_names : lower(trimsuffix(name, "."))]))
}

# Least privilege for a controller: move its services' records in one zone
# and watch its own changes reach INSYNC. No zone listing, no other records,
# no health checks.
data "aws_iam_policy_document" "controller" {
  statement {
    sid       = "ChangeOnlyTheServicesRecords"
    actions   = ["route53:ChangeResourceRecordSets"]
    resources = ["arn:${data.aws_partition.current.partition}:route53:::hostedzone/${local.zone_id}"]

    condition {
      # ForAllValues: every name in a change batch must be one of these, so a
      # batch that touches any other record is refused as a whole.
      test     = "ForAllValues:StringEquals"
      variable = "route53:ChangeResourceRecordSetsNormalizedRecordNames"
      values   = local.normalized_record_names
    }
  }

  statement {
    sid       = "ReadTheZonesRecords"
    actions   = ["route53:ListResourceRecordSets"]
    resources = ["arn:${data.aws_partition.current.partition}:route53:::hostedzone/${local.zone_id}"]
  }

  statement {
    # Change IDs are not known in advance, so GetChange cannot be narrower.
    sid       = "WaitForInsync"
    actions   = ["route53:GetChange"]
    resources = ["arn:${data.aws_partition.current.partition}:route53:::change/*"]
  }
}

resource "aws_iam_policy" "controller" {
  name        = var.policy_name
  path        = var.path
  description = "failover controller: change only the failover records of hosted zone ${local.zone_id}"
  policy      = data.aws_iam_policy_document.controller.json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "controller" {
  for_each = var.role_names

  role       = each.value
  policy_arn = aws_iam_policy.controller.arn
}

# What a region's host reads at boot (secrets, topology, the wheel), with its own role:
# one inline policy per role, so that a host reads its own region's parameters only.
data "aws_iam_policy_document" "boot_reads" {
  for_each = var.boot_reads

  statement {
    sid       = "ReadTheBootParameters"
    actions   = ["ssm:GetParameter"]
    resources = each.value.parameter_arns
  }

  dynamic "statement" {
    for_each = length(each.value.s3_objects) > 0 ? [each.value.s3_objects] : []
    content {
      sid       = "ReadTheWheel"
      actions   = ["s3:GetObject"]
      resources = [for object in statement.value : "arn:${data.aws_partition.current.partition}:s3:::${object}"]
    }
  }
}

resource "aws_iam_role_policy" "boot_reads" {
  for_each = var.boot_reads

  name   = "failover-boot-reads"
  role   = try(var.role_names[each.key], "")
  policy = data.aws_iam_policy_document.boot_reads[each.key].json

  lifecycle {
    precondition {
      condition     = contains(keys(var.role_names), each.key)
      error_message = "boot_reads key ${each.key} is not a key of role_names: it names no role."
    }
  }
}
