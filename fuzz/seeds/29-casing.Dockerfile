from alpine AS base
Run echo mixed
cOPY a b
COPPY a b
WRKDIR /x
frm x
