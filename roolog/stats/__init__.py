"""Stats: how much duplication raw logs or a converted OUT hold (roolog stats, infer-schema), and the text and
HTML that show reports to people. Imports read, group and write."""
