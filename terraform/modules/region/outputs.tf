output "name" {
  description = "Region name as the failover topology knows it."
  value       = var.name
}

output "priority" {
  description = "Failover priority of this region."
  value       = var.priority
}

output "aws_region" {
  description = "AWS region the resources live in."
  value       = data.aws_region.current.name
}

output "vpc_id" {
  description = "ID of the region's VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "CIDR of the region's VPC."
  value       = aws_vpc.this.cidr_block
}

output "subnet_ids" {
  description = "IDs of the region's subnets, one per availability zone."
  value       = aws_subnet.this[*].id
}

output "route_table_id" {
  description = "Route table of the subnets, where peering routes to the other regions go."
  value       = aws_route_table.this.id
}

output "security_group_ids" {
  description = "Security groups: postgres (PostgreSQL port) and controller (controller API port)."
  value = {
    postgres   = aws_security_group.postgres.id
    controller = aws_security_group.controller.id
  }
}

output "instance_id" {
  description = "ID of the PostgreSQL and controller instance."
  value       = aws_instance.postgres.id
}

output "address" {
  description = "Private IPv4 address of the instance: published in DNS when this region holds a writer, reached by the other regions over peering."
  value       = aws_instance.postgres.private_ip
}

output "controller_url" {
  description = "URL of the region's failover controller API."
  value       = "http://${aws_instance.postgres.private_ip}:${var.controller_port}"
}

output "controller_role_name" {
  description = "Name of the IAM role the controller runs as; attach the controller-iam policy to it."
  value       = aws_iam_role.controller.name
}

output "controller_role_arn" {
  description = "ARN of the IAM role the controller runs as."
  value       = aws_iam_role.controller.arn
}

output "instance_profile_name" {
  description = "Instance profile carrying the controller role."
  value       = aws_iam_instance_profile.controller.name
}

output "postgres" {
  description = "How to reach PostgreSQL (no secret: the password stays in the SSM parameter)."
  value = {
    host               = aws_instance.postgres.private_ip
    port               = var.postgres_port
    user               = var.postgres_user
    databases          = var.databases
    password_parameter = var.ssm_parameters.postgres_password
  }
}

output "boot_reads" {
  description = "What the host reads at boot with the controller role: the SSM parameters (ARNs) and the wheel's S3 object (bucket/key), if any. Pass it to controller-iam, which grants exactly these."
  value = {
    parameter_arns = local.parameter_arns
    s3_objects     = local.wheel_s3_object == null ? [] : [local.wheel_s3_object]
  }
}
