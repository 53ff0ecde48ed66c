locals {
  zone_name = lower(trimsuffix(var.zone_name, "."))

  # Record names as Route 53 stores them: lower case, no trailing dot.
  writer_records = { for name, s in var.services : name => lower(trimsuffix(s.writer_record, ".")) }
  reader_records = {
    for name, s in var.services : name => lower(trimsuffix(s.reader_record, "."))
    if s.reader_record != null
  }
  records_outside_zone = [
    for record in concat(values(local.writer_records), values(local.reader_records)) : record
    if !endswith(record, ".${local.zone_name}")
  ]
}

resource "aws_route53_zone" "this" {
  name          = local.zone_name
  comment       = "failover GSLB: writer and reader records owned by the failover controllers"
  force_destroy = var.force_destroy
  tags          = var.tags

  dynamic "vpc" {
    for_each = var.vpc_associations
    content {
      vpc_id     = vpc.value.vpc_id
      vpc_region = vpc.value.vpc_region
    }
  }

  lifecycle {
    precondition {
      condition     = var.private_zone == (length(var.vpc_associations) > 0)
      error_message = "a private zone (private_zone = true) needs at least one entry in vpc_associations, and a public zone none."
    }
    precondition {
      condition     = length(local.records_outside_zone) == 0
      error_message = "records ${join(", ", local.records_outside_zone)} are outside the zone ${local.zone_name}."
    }
  }
}

# Terraform creates each record once; from then on the failover controllers
# move it (compare-and-set on its current value), so Terraform must never
# put the old value back: `terraform apply` after a failover changes nothing.
resource "aws_route53_record" "writer" {
  for_each = var.services

  zone_id = aws_route53_zone.this.zone_id
  name    = local.writer_records[each.key]
  type    = "A"
  ttl     = each.value.ttl
  records = [each.value.writer_address]

  lifecycle {
    ignore_changes = [records]
  }
}

resource "aws_route53_record" "reader" {
  for_each = { for name, s in var.services : name => s if s.reader_record != null }

  zone_id = aws_route53_zone.this.zone_id
  name    = local.reader_records[each.key]
  type    = "A"
  ttl     = each.value.ttl
  # Route 53 refuses an A record without values: a service with no reader yet
  # starts by sending readers to the writer.
  records = length(each.value.reader_addresses) > 0 ? each.value.reader_addresses : [each.value.writer_address]

  lifecycle {
    ignore_changes = [records]
  }
}
