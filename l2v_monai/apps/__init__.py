"""Integrations that load the bundle in other applications: MONAI Deploy (``monai_deploy``) and MONAI Label
(``monai_label``: the app that infers, retrains from radiologists' labels and serves the relabeling queue).
Each imports its SDK itself; nothing here is imported by the floors below."""
