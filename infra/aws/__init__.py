"""Sluice on AWS: the CloudFormation/SAM templates, their parameters per environment, and the deploy adapter."""
