locals {
  # An emulator has no real credentials, account or instance metadata.
  emulated = var.aws_endpoint_url != null
}

# One provider per AWS region the fleet uses, in order of first appearance in
# var.regions. Terraform cannot make providers with for_each, so there is a fixed number
# of slots: five, as many regions as the lab's largest fleet (more regions can share AWS
# regions; variables.tf refuses a sixth AWS region). Each slot costs a provider process
# in every plan, used or not; an unused one repeats the first region and makes nothing.
# Route 53 and IAM are global: they go through the first slot.
provider "aws" {
  alias                       = "slot0"
  region                      = local.aws_regions[0]
  skip_credentials_validation = local.emulated
  skip_requesting_account_id  = local.emulated
  skip_metadata_api_check     = local.emulated

  # Null (real AWS) leaves each service on its default endpoint.
  endpoints {
    ec2     = var.aws_endpoint_url
    iam     = var.aws_endpoint_url
    route53 = var.aws_endpoint_url
    ssm     = var.aws_endpoint_url
    sts     = var.aws_endpoint_url
  }
}

provider "aws" {
  alias                       = "slot1"
  region                      = try(local.aws_regions[1], local.aws_regions[0])
  skip_credentials_validation = local.emulated
  skip_requesting_account_id  = local.emulated
  skip_metadata_api_check     = local.emulated

  # Null (real AWS) leaves each service on its default endpoint.
  endpoints {
    ec2     = var.aws_endpoint_url
    iam     = var.aws_endpoint_url
    route53 = var.aws_endpoint_url
    ssm     = var.aws_endpoint_url
    sts     = var.aws_endpoint_url
  }
}

provider "aws" {
  alias                       = "slot2"
  region                      = try(local.aws_regions[2], local.aws_regions[0])
  skip_credentials_validation = local.emulated
  skip_requesting_account_id  = local.emulated
  skip_metadata_api_check     = local.emulated

  # Null (real AWS) leaves each service on its default endpoint.
  endpoints {
    ec2     = var.aws_endpoint_url
    iam     = var.aws_endpoint_url
    route53 = var.aws_endpoint_url
    ssm     = var.aws_endpoint_url
    sts     = var.aws_endpoint_url
  }
}

provider "aws" {
  alias                       = "slot3"
  region                      = try(local.aws_regions[3], local.aws_regions[0])
  skip_credentials_validation = local.emulated
  skip_requesting_account_id  = local.emulated
  skip_metadata_api_check     = local.emulated

  # Null (real AWS) leaves each service on its default endpoint.
  endpoints {
    ec2     = var.aws_endpoint_url
    iam     = var.aws_endpoint_url
    route53 = var.aws_endpoint_url
    ssm     = var.aws_endpoint_url
    sts     = var.aws_endpoint_url
  }
}

provider "aws" {
  alias                       = "slot4"
  region                      = try(local.aws_regions[4], local.aws_regions[0])
  skip_credentials_validation = local.emulated
  skip_requesting_account_id  = local.emulated
  skip_metadata_api_check     = local.emulated

  # Null (real AWS) leaves each service on its default endpoint.
  endpoints {
    ec2     = var.aws_endpoint_url
    iam     = var.aws_endpoint_url
    route53 = var.aws_endpoint_url
    ssm     = var.aws_endpoint_url
    sts     = var.aws_endpoint_url
  }
}
