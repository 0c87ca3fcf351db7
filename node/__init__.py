"""An Alys node (a merged-mined Bitcoin sidechain) built as supervised actors on ``otp``.

``node.types`` holds value types, ``node.workflows`` the rules as plain synchronous code,
``node.integration`` the clients of outside systems, ``node.actors`` the thin actors.
"""
