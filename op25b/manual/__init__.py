"""Generated documentation: op25b(8), op25b-policy(5) and the bash completion.

Made from the code itself (the argument parser, the help table, the exit codes, the
policy key table that tests hold against the loader), so the manual cannot drift from
what is installed. ``python -m op25b.manual ROOT`` writes the three files under ROOT
the way the Debian package installs them.
"""
