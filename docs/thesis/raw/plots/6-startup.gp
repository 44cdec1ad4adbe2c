$d0 << EOD
0.0 10.618366
2.0 26.477787
5.0 40.344021
10.0 58.875256
20.0 114.264144
30.0 160.39323199999998
40.0 211.204001
EOD
$d1 << EOD
0.0 8.004219055175781
2.0 0.00080108642578125
5.0 1.0012283325195312
10.0 5.002937316894531
20.0 8.004219055175781
30.0 8.002510070800781
40.0 8.004219055175781
EOD
$d2 << EOD
0.0 12.0
0.0 15.0
EOD
$d3 << EOD
0.0 85.0
7.0 40.0
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/6-startup.png'
set title "#6 start-up: connect to first usable chunk"
set xlabel "RTT (ms)"
set ylabel "ms"
set grid
set key below left Left reverse maxcols 2 height 1
set xrange [-1:42]
set y2label 'MiB on the wire before the first chunk'
set y2tics
set ytics nomirror
plot $d0 using 1:2 with linespoints  title "ferry: time to first usable chunk", \
  $d1 using 1:2 with linespoints axes x1y2 title "ferry: bytes on the wire by then (y2)", \
  $d2 using 1:2 with linespoints dt 2 pt 6 ps 1.6 lw 1.5 title "thesis: direct mount init, polling / udev", \
  $d3 using 1:2 with points axes x1y2 pt 8 ps 1.6 title "thesis: MB pulled before the device opened (y2)"
