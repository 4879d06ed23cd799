"""Segmentation side of the repository: toy ADE20K generator (``toy_ade20k``) and its command-line tool."""
