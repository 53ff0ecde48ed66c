output "zone_id" {
  description = "Route 53 hosted zone ID: the controllers' route53.hosted_zone_id."
  value       = aws_route53_zone.this.zone_id
}

output "zone_arn" {
  description = "ARN of the hosted zone."
  value       = aws_route53_zone.this.arn
}

output "zone_name" {
  description = "Zone name, absolute (with the trailing dot), as the failover topology writes it."
  value       = "${local.zone_name}."
}

output "name_servers" {
  description = "Name servers of the zone (delegate a public zone to them)."
  value       = aws_route53_zone.this.name_servers
}

output "services" {
  description = "Per service: absolute writer and reader record names and their TTL."
  value = {
    for name, s in var.services : name => {
      writer_record = "${local.writer_records[name]}."
      reader_record = s.reader_record == null ? null : "${local.reader_records[name]}."
      ttl           = s.ttl
    }
  }
}

output "record_names" {
  description = "Every failover record name, lower case without the trailing dot: the form Route 53's normalized-record-names IAM condition compares."
  value       = sort(distinct(concat(values(local.writer_records), values(local.reader_records))))
}
