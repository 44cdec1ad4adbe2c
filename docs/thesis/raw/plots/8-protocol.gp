$d0 << EOD
0.0 463.02086848317873
2.0 330.67335495779776
4.0 411.46089432692656
6.0 455.4627991068384
8.0 321.58639695168654
10.0 359.7917435440431
12.0 310.2158469907126
14.0 297.9150138460658
22.0 234.5758753512473
28.0 192.51864272074735
34.0 175.0456612077437
40.0 141.76577726896235
EOD
$d1 << EOD
0.0 797.5779949028783
2.0 1001.8511548173896
4.0 933.7440510291124
6.0 935.2883991493669
8.0 974.7007386982766
10.0 853.3410399510808
12.0 903.2257961325009
14.0 824.3918483876408
22.0 595.8248578540326
28.0 481.3190210849518
34.0 409.3713703471234
40.0 363.7024224665048
EOD
$d2 << EOD
0.0 500.0
0.0 390.0
0.0 50.0
40.0 3.0
EOD
$d3 << EOD
0.0 250.0
25.0 300.0
40.0 230.0
EOD
$d4 << EOD
0.0 395.0
40.0 230.0
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/8-protocol.png'
set title "#8 ferry's protocol vs a raw TCP stream over RTT (no bandwidth cap)"
set xlabel "RTT (ms)"
set ylabel "MiB/s (log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set xrange [-1:42]
plot $d0 using 1:2 with linespoints  title "ferry: pull (2 conns x 64 chunks of 64 KiB in flight)", \
  $d1 using 1:2 with linespoints  title "raw TCP stream, same emulated link", \
  $d2 using 1:2 with linespoints dt 2 pt 4 ps 1.6 lw 1.5 title "thesis: direct: gRPC 500, fRPC 390, Dudirekta 50; ~3 at 40 ms", \
  $d3 using 1:2 with linespoints dt 2 pt 8 ps 1.6 lw 1.5 title "thesis: managed fRPC", \
  $d4 using 1:2 with linespoints dt 2 pt 6 ps 1.6 lw 1.5 title "thesis: managed gRPC"
