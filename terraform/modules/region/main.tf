data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_availability_zones" "available" {
  state = "available"
}

data "aws_ssm_parameter" "ami" {
  name = var.ami_ssm_parameter
}

locals {
  prefix = "${var.fleet_name}-${var.name}"
  tags   = merge(var.tags, { "failover:fleet" = var.fleet_name, "failover:region" = var.name })

  # Two CIDRs overlap exactly when their network addresses agree at the
  # shorter of the two prefix lengths.
  vpc_prefix_length = tonumber(split("/", var.vpc_cidr)[1])
  overlapping_peer_cidrs = [
    for cidr in var.peer_cidrs : cidr
    if cidrhost("${cidrhost(var.vpc_cidr, 0)}/${min(local.vpc_prefix_length, tonumber(split("/", cidr)[1]))}", 0) ==
    cidrhost("${cidrhost(cidr, 0)}/${min(local.vpc_prefix_length, tonumber(split("/", cidr)[1]))}", 0)
  ]

  # What the host reads at boot, for the controller-iam module to grant exactly that.
  parameter_arns = [
    for name in values(var.ssm_parameters) :
    "arn:${data.aws_partition.current.partition}:ssm:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:parameter${name}"
    if name != null # tls_ca, when the certificates go unchecked
  ]
  wheel_s3_object = startswith(var.failover_wheel_url, "s3://") ? trimprefix(var.failover_wheel_url, "s3://") : null

  # Names only: the secrets behind them are read at boot.
  cloud_init = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    module_dir             = path.module
    region                 = var.name
    aws_region             = data.aws_region.current.name
    wheel_url              = var.failover_wheel_url
    parameters             = var.ssm_parameters
    postgres_major_version = var.postgres_major_version
    postgres_port          = var.postgres_port
    postgres_user          = var.postgres_user
    postgres_sslmode       = var.ssm_parameters.tls_ca == null ? "require" : var.postgres_sslmode
    databases              = var.databases
    # Peers and clients apart: only the regions' controllers and subscriptions log in
    # as postgres_user.
    controller_cidrs = concat([var.vpc_cidr], var.peer_cidrs)
    client_cidrs     = var.client_cidrs
  })
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = local.prefix })

  lifecycle {
    precondition {
      condition     = length(local.overlapping_peer_cidrs) == 0
      error_message = "vpc_cidr ${var.vpc_cidr} overlaps peer_cidrs ${join(", ", local.overlapping_peer_cidrs)}: peered VPCs need disjoint CIDRs."
    }
  }
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = local.prefix })
}

resource "aws_route_table" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = local.prefix })
}

resource "aws_route" "internet" {
  route_table_id         = aws_route_table.this.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_subnet" "this" {
  count = var.availability_zone_count

  vpc_id            = aws_vpc.this.id
  availability_zone = data.aws_availability_zones.available.names[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, count.index)
  # Public IPs give the instance outbound internet (packages, SSM, the Route 53
  # API) without a NAT gateway; the security groups admit nothing from the
  # internet.
  map_public_ip_on_launch = true
  tags                    = merge(local.tags, { Name = "${local.prefix}-${data.aws_availability_zones.available.names[count.index]}" })
}

resource "aws_route_table_association" "this" {
  count = var.availability_zone_count

  subnet_id      = aws_subnet.this[count.index].id
  route_table_id = aws_route_table.this.id
}

resource "aws_security_group" "postgres" {
  name        = "${local.prefix}-postgres"
  description = "PostgreSQL from the other failover regions and listed clients only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.prefix}-postgres" })
}

resource "aws_vpc_security_group_ingress_rule" "postgres" {
  for_each = toset(concat(var.peer_cidrs, var.client_cidrs))

  security_group_id = aws_security_group.postgres.id
  description       = contains(var.peer_cidrs, each.value) ? "PostgreSQL from a peer region" : "PostgreSQL from a client network"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.postgres_port
  to_port           = var.postgres_port
  tags              = local.tags
}

resource "aws_security_group" "controller" {
  name        = "${local.prefix}-controller"
  description = "failover controller API from the other failover regions and operator_cidrs only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.prefix}-controller" })
}

resource "aws_vpc_security_group_ingress_rule" "controller" {
  for_each = toset(concat(var.peer_cidrs, var.operator_cidrs))

  security_group_id = aws_security_group.controller.id
  description       = contains(var.peer_cidrs, each.value) ? "controller API from a peer region" : "controller API from an operator network"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.controller_port
  to_port           = var.controller_port
  tags              = local.tags
}

# Outbound: replication to subscribers, the Route 53 API, package mirrors.
resource "aws_vpc_security_group_egress_rule" "all" {
  for_each = {
    postgres   = aws_security_group.postgres.id
    controller = aws_security_group.controller.id
  }

  security_group_id = each.value
  description       = "all outbound"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
  tags              = local.tags
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# The controller's role. Its rights (Route 53, and reading exactly what the host reads
# at boot: boot_reads) come from the controller-iam module, attached by the caller, so
# that one module says everything a controller may do.
resource "aws_iam_role" "controller" {
  name               = "${local.prefix}-controller"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = local.tags
}

resource "aws_iam_instance_profile" "controller" {
  name = "${local.prefix}-controller"
  role = aws_iam_role.controller.name
  tags = local.tags
}

resource "aws_instance" "postgres" {
  ami                    = data.aws_ssm_parameter.ami.value
  instance_type          = var.instance_type
  iam_instance_profile   = aws_iam_instance_profile.controller.name
  subnet_id              = aws_subnet.this[0].id
  vpc_security_group_ids = [aws_security_group.postgres.id, aws_security_group.controller.id]
  # Gzipped (cloud-init unpacks it): the scripts with their comments would come near
  # EC2's 16 KB limit on user data.
  user_data_base64 = base64gzip(local.cloud_init)

  metadata_options {
    http_tokens   = "required"
    http_endpoint = "enabled"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = 20
    encrypted   = true
  }

  tags = merge(local.tags, { Name = "${local.prefix}-postgres" })

  # This host holds the region's database: a newer image behind the SSM
  # parameter or an edited cloud-init must not replace it on the next apply.
  # Rebuild a region on purpose, after failing its writers over, with
  # `terraform apply -replace=...aws_instance.postgres`.
  lifecycle {
    ignore_changes = [ami, user_data_base64]

    precondition {
      # Four base64 characters carry three bytes.
      condition     = length(base64gzip(local.cloud_init)) / 4 * 3 <= 16384
      error_message = "The gzipped cloud-init user data is over EC2's limit of 16384 bytes."
    }
  }
}
