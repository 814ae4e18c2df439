"""L1 terminal layer: PTY children, the one reader loop, screens, query answers, transcripts.

pexpect, ptyprocess and pyte are imported only inside this package.
"""
