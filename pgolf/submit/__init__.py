"""pgolf.submit"""
