	FROM	alpine	AS	x
	  RUN	echo	tab
ENV	A	B
LABEL	a=b	c=d
