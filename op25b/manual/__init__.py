"""Generated documentation: op25b(8), op25b-policy(5) and the bash completion."""
