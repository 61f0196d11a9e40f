"""Thaw utility: puts each retrieved result back in S3, verified."""
