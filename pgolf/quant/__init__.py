"""pgolf.quant"""
