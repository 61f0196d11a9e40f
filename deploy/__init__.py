"""What an operator deploys: systemd units (deploy/systemd) and IAM policies (deploy/iam)."""
