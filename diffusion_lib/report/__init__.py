"""The report: figures and their style, LaTeX tables, and the Markdown/HTML document."""
