"""Drop-in modules for code written against other analytics libraries' APIs.

Each module keeps the other library's names, signatures and return values and runs on
trackline's engine underneath: `trackline.compat.segment` for segment-analytics-python 2.x.
"""
