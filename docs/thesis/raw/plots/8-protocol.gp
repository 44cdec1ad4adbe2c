$d0 << EOD
0.0 373.3857839753093
2.0 523.2846602105295
4.0 434.4975169281591
6.0 521.8535425697503
8.0 433.30503558067375
10.0 387.522853226783
12.0 375.4161106304351
14.0 315.170463860387
22.0 240.385415646059
28.0 205.21790815605914
34.0 174.65438505642382
40.0 149.15106291230987
EOD
$d1 << EOD
0.0 680.8790498903095
2.0 811.5742012210902
4.0 934.5420921408854
6.0 570.4618440371045
8.0 710.9124453117643
10.0 668.4269621085989
12.0 671.4392240316771
14.0 685.8021369680313
22.0 574.3666431354835
28.0 462.9295168858159
34.0 401.0021854974163
40.0 351.5862889411823
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
