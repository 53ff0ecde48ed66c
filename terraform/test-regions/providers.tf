locals {
  # An emulator has no real credentials, account or instance metadata.
  emulated = var.aws_endpoint_url != null
}

# Route 53 and IAM are global; they go through the first region's provider.
provider "aws" {
  alias                       = "first"
  region                      = var.regions[0].aws_region
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
  alias                       = "second"
  region                      = var.regions[1].aws_region
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
  alias                       = "third"
  region                      = var.regions[2].aws_region
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
