"""Archive utility: moves free users' result files from S3 to the Glacier vault."""
