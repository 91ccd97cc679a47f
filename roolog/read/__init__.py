"""Stage 1, read: the user's files, folders and globs -> one stream of Arrow record batches with one unified
schema, types as the files say. Imports nothing from a later stage (group, write, run)."""
