"""Detection side of the repository: toy COCO generator (``toy_coco``) and its command-line tool."""
