"""This repository's own composition: one stack per environment, from cdk.json."""
